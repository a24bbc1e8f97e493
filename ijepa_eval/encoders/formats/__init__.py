"""Stage 2 of loading: checkpoint layouts, one module per family, each a (detect, convert) pair.

``detect(obj)`` says whether what the read stage returned has this layout; ``convert(obj, branch)`` turns
it into one network's timm-named state dict (``base.Converted``). The modules build on ``base``; the
registry that names them all is ``ijepa_eval/encoders/registry.py``, above them.
"""
