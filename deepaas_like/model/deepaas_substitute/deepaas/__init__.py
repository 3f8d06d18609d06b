"""Stands in for the ``deepaas`` package where it is not installed: the modules DEEPaaS V2
plugins import, made of deepaas_like's classes (see ``deepaas_like.model.deepaas_compat``).
"""

#: The DEEPaaS release whose plugin-facing API these modules follow.
__version__ = "2.6.0"
__deepaas_like_substitute__ = True
