"""puppet: real-time VTuber avatar puppeteering.

The data path, one subpackage per stage: capture -> tracking -> mapping -> poser
(``poser_models``) -> outputs; ``training`` distils students; ``app`` runs the loop.
"""

__version__ = "0.2.0"
