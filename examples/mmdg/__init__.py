"""Data layer of the multimodal domain-generalization (MMDG) example.

Modules: ``features`` (feature layout v1 loader and writer), ``synthetic`` (controllable
synthetic MMDG generator), ``avdigits`` (AV-Digits-DG generator) and ``extract`` (optional
feature extraction from the raw EPIC-Kitchens / HAC layouts).
"""
