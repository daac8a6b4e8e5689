"""multibeta.metrics"""
