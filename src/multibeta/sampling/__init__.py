"""multibeta.sampling"""
