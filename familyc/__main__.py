"""`python -m familyc`: the same CLI as the `familyc` script (scripts use it with an explicit Python)."""

from familyc.cli import main

main()
