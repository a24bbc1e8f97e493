"""Stage 3 of loading: the architecture converted weights imply (timm VisionTransformer or Beit kwargs).

``base`` holds what both families share, ``vit`` and ``beit`` read each family's spec from its weights,
``families`` dispatches on the family and completes a spec with what the user passed (``--arch``).
"""
