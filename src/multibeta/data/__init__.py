"""multibeta.data"""
