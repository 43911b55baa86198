"""zeroshot-animate: training-free character animation (PoseAnimate, Qffusion) on Stable Diffusion 1.5."""

__version__ = "0.1.0"
