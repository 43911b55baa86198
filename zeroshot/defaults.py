"""The default models and limits, in a module that imports nothing heavy (scripts read them to build `--help`)."""

#: Stable Diffusion 1.5 in diffusers format.
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
#: The OpenPose ControlNet v1.1 for Stable Diffusion 1.5.
DEFAULT_CONTROLNET = "lllyasviel/control_v11p_sd15_openpose"
#: Longest side of an output: Stable Diffusion 1.5 works at 512; at 4096 its attention no longer fits a GPU.
MAX_OUTPUT_SIDE = 4096
