"""Video captioning plugin for deepaas_like (DEEPaaS V2): decord samples frames, a
transformers ``VisionEncoderDecoderModel`` (e.g. ViT + GPT-2) captions them.

The hooks live in :mod:`deepaas_like_video_captioning.api`; frame sampling and decoding in
:mod:`deepaas_like_video_captioning.video`; model loading and captioning in
:mod:`deepaas_like_video_captioning.captioner`; a tiny offline captioner and a generated H.264
clip for tests and demos in :mod:`deepaas_like_video_captioning.testing`.
"""
