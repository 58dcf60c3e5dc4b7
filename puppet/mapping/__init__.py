"""Stage 3, mapping: FaceObservation -> 45-parameter PoseVector.

converters (blendshape/geometry formulas), calibration (the user's profile), smoothing
(One Euro), idle (blink, breathing, face-lost easing), lipsync (voice -> mouth) and
pose_mapper, which chains them per frame.
"""
