"""What the tests share: tiny data and configs, dataset files in the original formats, and the
scripts some tests run in processes of their own (python -m tests.helpers.NAME)."""
