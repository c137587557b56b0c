"""Every file name of an experiment folder, in one place.

    <storage_path>/<name>/
        config.json              the validated config every arm ran with
        job.json                 which arms over which space: what `pbt resume` finishes
        lr_range.json, .png      the range test
        pbt/  grid/  one_cycle/  an arm: Ray Tune's trial folders, and the driver's files
            reports.jsonl        every report of every run, in order
            packing.json         how the arm's runs were packed (kept for `pbt resume`)
            axes.json            the grid's values per axis
            exploits.jsonl       pbt's log of the population's exploits (PBT only)
            pbt_global.txt       Ray's log of them (it starts over on a resume)
        lineage.json             who copied whom, the best member's schedule
        replay.json              `pbt replay`: the best schedule retrained
        summary.json, compare_accuracy.png, compare_schedule.png   the comparison
        sweep/, sweep_w*/        `pbt sweep`: its arms (one per width), and sweep.json, sweep*.png
        tensorboard/             all of it as TensorBoard runs
"""

from __future__ import annotations

CONFIG_FILE = "config.json"
JOB_FILE = "job.json"
RANGE_FILE = "lr_range.json"
RANGE_PLOT = "lr_range.png"
LINEAGE_FILE = "lineage.json"
REPLAY_FILE = "replay.json"
SUMMARY_FILE = "summary.json"
ACCURACY_PLOT = "compare_accuracy.png"
SCHEDULE_PLOT = "compare_schedule.png"
TENSORBOARD = "tensorboard"

# `pbt sweep`'s arms and files all start with it: sweep/ or sweep_w<width>/, sweep.json, sweep_widths.json, sweep*.png.
SWEEP_PREFIX = "sweep"

# In an arm's folder, beside Ray Tune's trial folders.
REPORTS_FILE = "reports.jsonl"
PACKING_FILE = "packing.json"
AXES_FILE = "axes.json"
EXPLOIT_LOG = "exploits.jsonl"
POLICY_LOG = "pbt_global.txt"

# The driver's files inside an arm's folder; everything else there is Ray Tune's.
ARM_FILES = (REPORTS_FILE, AXES_FILE, PACKING_FILE)
