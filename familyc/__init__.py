"""familyc: plan, train and report a family of language models grown progressively."""

__version__ = "0.1.0"
