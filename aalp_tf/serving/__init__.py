"""Serving: the SavedModel export and loader (saved_model.py), the export of a run's checkpoint
(run_export.py), TF Serving's request protos (request_protos.py), its config files
(server_config.py) and the Predict client (client.py). `python -m aalp_tf.serving` runs
__main__.py."""
