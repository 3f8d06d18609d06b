"""Not imported under this name. :func:`deepaas_like.model.deepaas_compat.install` puts this
folder last on ``sys.path``, so that ``import deepaas`` finds the package below where the
real DEEPaaS is not installed (an installed ``deepaas`` comes earlier on the path and wins).
"""
