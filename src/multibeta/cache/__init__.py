"""multibeta.cache"""
