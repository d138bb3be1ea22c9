"""celseg.pseudo"""
