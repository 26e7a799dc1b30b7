"""Training: the shapes world's models (VAE, text encoders, teachers), trained on this machine.

Each model has one script, seeded and reproducible (`make shapes` runs them in order):
    python -m edit_mobile.training.train_vae      -o build/shapes/vae
    python -m edit_mobile.training.train_teacher  --family pixart --vae build/shapes/vae -o build/shapes/pixart
The finished pipeline folders are copied into edit_mobile.pretrained (pretrained/), which the
presets `shapes-pixart` and `shapes-sd3` load.
"""
