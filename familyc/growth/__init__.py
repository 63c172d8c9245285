"""What growing one member into the next means, before any weights exist. Torch-free.

    feasibility.py   whether a growth step is possible, and whether it preserves the function exactly
    maps.py          which source unit each target unit copies (seeded index maps)

`validate` and the compiler judge growth steps here; the operators on weights (familyc.expand,
torch) implement exactly what is judged possible here.
"""
