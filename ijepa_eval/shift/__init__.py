"""Distribution shift: the reported ImageNet head on ImageNet-V2, ReaL, -A, -R, -Sketch and -C.

``metrics`` holds the sets' metrics as pure functions (200-class masking, ReaL, corruption errors and mCE).
"""
