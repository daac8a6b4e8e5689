"""multibeta.workflow"""
