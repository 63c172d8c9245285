"""Growth operators on weights (torch): expand a trained member into the next one.

    operators.py   every target tensor as a recipe of at most two source tensors (fpi, aki, exact,
                   zero_insert, stack, interpolate, noise); `expand_state_dict` in memory
    stream.py      `expand_checkpoint`: the same recipes from a DCP folder into a new one, streamed
    verify.py      `familyc expand --verify`: both models' logits on the same tokens

What a growth step may do is judged torch-free in familyc.growth; the checkpoint I/O is
familyc.checkpoint; the models come from familyc.backend.
"""
