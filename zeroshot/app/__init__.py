"""The browser app (`scripts/app.py`): Gradio tabs that animate, edit and extract with the scripts' own pipeline
objects and models loaded once.

`zeroshot.app.jobs` holds what each button does, without Gradio; `zeroshot.app.ui` builds the page (it alone imports
Gradio).
"""
