"""Model versions: what a training that saves its state leaves behind. ``storage`` keeps
their directories (fsspec), ``records`` their rows in the server's database.
"""
