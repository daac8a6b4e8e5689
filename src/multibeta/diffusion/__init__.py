"""multibeta.diffusion"""
