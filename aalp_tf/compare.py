"""Compare training methods over seeds: train and evaluate every (method, seed) cell, then
summarise with confidence intervals and paired differences against a baseline.

    python -m aalp_tf.compare --dataset=mnist --flagfile=flags/mnist_seeds.cfg \\
        --methods=alp,aalp --seeds=0,1,2 --attacks=clean,pgd40,autoattack1000 \\
        --test_examples=2000 --attack_examples=autoattack1000:1000 --output_dir=DIR

Every training flag sets the run each cell trains (as `train` reads it); the cell sets the
method and the seed. Rerunning resumes; `--list_cells` and `--cell=K` share the cells among
machines (one index of a job array per cell, the same --output_dir on a shared file system).
A full disk is one line naming the flag, the file and the space it needed; a rerun once there
is room goes on from the last file written whole.
"""
from aalp_tf import cli
from aalp_tf.cli.configs import compare_config_from_flags
from aalp_tf.files import full_disk_refused


def main(argv):
    cli.reject_positional(argv)
    cfg = compare_config_from_flags()
    from aalp_tf.comparison import cells  # reads files only: listing needs no TensorFlow

    plan = cells.plan(cfg)
    if cfg.list_cells:
        print("\n".join(cells.listing(cfg, plan)))
        return
    from aalp_tf.comparison import report, runner  # TensorFlow from here on

    study = runner.prepare(cfg, plan)  # every check, before anything is written
    # The study's files; a cell's run folder and evaluations say --runs_dir (runner).
    with full_disk_refused(cfg.out, flag="--output_dir", then=runner.RERUN):
        cells.write_settings(cfg, study.settings)
        todo = plan if cfg.cell is None else [plan[cfg.cell]]
        runner.run_cells(cfg, study, plan, todo)
        written = report.refresh(cfg, plan)
    finished = len(cells.finished(cfg, plan))
    print(f"{finished} of {len(plan)} cells finished"
          + (f"; wrote {', '.join(str(p) for p in written)}" if written else ""))


if __name__ == "__main__":
    cli.run(main, "compare")
