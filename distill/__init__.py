"""EDiT distillation: a converted student learns the teacher back (`edit-mobile distill`).

objective.py: the noising process and task target, read from the teacher's scheduler config.
data.py: training latents and prompt inputs (teacher samples for prompts, or captioned images),
computed once and cached in safetensors shards. losses.py: task, output and per-layer feature
distillation. engine.py: the torch.distributed (torchrun / gloo / NCCL) loop with DDP, atomic
checkpoints and resume. cli.py: the command.
"""
