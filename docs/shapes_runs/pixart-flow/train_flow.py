"""The PixArt shapes teacher trained on SD3's rectified-flow objective instead of v-prediction.

Everything but the objective is the shipped recipe (training/train_teacher.py): architecture,
text encoder, data, stages, loss weights, EMA. Noise levels are drawn as the SD3 teacher's are
(`sd3_sigmas`: half uniform, half logit-normal shifted by SD3_SHIFT) and the model predicts
noise - x0 at timestep 1000 sigma. It samples with DPM-Solver++ 2M on flow sigmas (SANA's
scheduler, which PixArtSigmaPipeline drives as it is), shifted as trained.

    python docs/shapes_runs/pixart-flow/train_flow.py --family pixart-flow --vae pretrained/shapes-vae \
        -o OUT --stages 128:2000,256:4200
"""

import sys

import torch

from edit_mobile.errors import UserError
from edit_mobile.training import train_teacher as tt


class PixArtFlowRecipe(tt.PixArtRecipe):
    name = "pixart-flow"
    sampling = {"steps": 20, "guidance": 3.0}

    def __init__(self, seed: int):
        from diffusers import DPMSolverMultistepScheduler

        super().__init__(seed)
        self.scheduler = DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=tt.SD3_SHIFT,
                                                     prediction_type="flow_prediction",
                                                     algorithm_type="dpmsolver++", solver_order=2)

    def loss(self, model, x0: torch.Tensor, cond: dict, generator: torch.Generator) -> torch.Tensor:
        sigma = tt.sd3_sigmas(x0.shape[0], generator)
        noise = torch.randn(x0.shape, generator=generator)
        s = sigma.view(-1, 1, 1, 1)
        noisy = (1 - s) * x0 + s * noise
        prediction = model(noisy, encoder_hidden_states=cond["encoder_hidden_states"], timestep=sigma * 1000,
                           encoder_attention_mask=cond["encoder_attention_mask"],
                           added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
        return tt.weighted_mse(prediction, noise - x0, tt.object_weights(x0))


tt.RECIPES["pixart-flow"] = PixArtFlowRecipe

if __name__ == "__main__":
    try:
        tt.main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
