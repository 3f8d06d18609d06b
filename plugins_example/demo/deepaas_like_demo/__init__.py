"""A light demo plugin for deepaas_like: image statistics and filtered thumbnails (Pillow)."""
