"""Growth operators: expand a trained member into the next one.

`familyc.expand.feasibility` is torch-free (validate and plan use it); the operators and the
checkpoint I/O need torch and are imported only when used.
"""
