"""Llama-Factory on a CPU, for tests and demos only (never part of the package): its environment
(setup_env.sh) and the import-only torchaudio stand-in."""
import os

STAND_INS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stand_ins")
