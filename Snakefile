# iclpt: "How Does In-Context Learning Help Prompt Tuning?" (Sun et al., 2023), end to end.
#   snakemake --cores 8                          # the paper run (config/config.yaml)
#   snakemake --cores 2 --configfile config/demo.yaml
import os
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

# The iclpt library (src/) is importable here and by every job, in this env, a conda env or on a cluster node.
_SRC = os.path.join(workflow.basedir, "src")
sys.path.insert(0, _SRC)
from iclpt.orchestration.config_checks import check_data_files  # noqa: E402
from iclpt.jobenv import export_gpus, export_pythonpath  # noqa: E402

export_pythonpath(_SRC)


# The paper run is the default; a --configfile replaces it (it is not merged into it).
if not config:

    configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")
# the GPUs local GPU jobs lease (iclpt.devices): the config's `gpus`, else the machine's
export_gpus(config.get("gpus"))


CONDA_ENV = "envs/iclpt.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/retrieval.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/report.smk"


# Parse time, after common.smk's config checks: every data file the config names exists
# (iclpt.orchestration.config_checks).
check_data_files(config)


rule all:
    default_target: True
    input:
        all_targets(),
