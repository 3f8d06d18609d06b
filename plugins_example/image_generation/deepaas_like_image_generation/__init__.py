"""Text-to-image generation plugin for deepaas_like (DEEPaaS V2), built on diffusers.

The hooks live in :mod:`deepaas_like_image_generation.api`; loading and drawing in
:mod:`deepaas_like_image_generation.pipeline`; a tiny offline pipeline for tests and demos in
:mod:`deepaas_like_image_generation.testing`.
"""
