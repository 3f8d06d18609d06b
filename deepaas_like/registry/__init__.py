"""Model versions at rest: what a training that saves its state leaves behind. ``storage``
keeps their directories (fsspec), ``records`` their rows in the server's database."""

__all__: list[str] = []
