import json
import os

lines = open(snakemake.input[0]).read().split()
with open(snakemake.output[0], "w") as f:
    json.dump({"item": snakemake.wildcards.item, "lines": len(lines)}, f)
os.makedirs("where", exist_ok=True)
with open(f"where/train_prompt_{snakemake.wildcards.item}.txt", "w") as f:
    f.write(f"{os.environ.get('SLURM_JOB_ID', 'local')} {os.environ.get('CUDA_VISIBLE_DEVICES', 'none')}\n")
