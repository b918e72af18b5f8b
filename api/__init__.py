"""The HTTP edge and the serving engine of modelreg."""
