"""multibeta.vae"""
