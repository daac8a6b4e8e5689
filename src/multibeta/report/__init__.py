"""multibeta.report"""
