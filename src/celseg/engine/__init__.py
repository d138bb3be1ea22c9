"""celseg.engine"""
