"""multibeta.models"""
