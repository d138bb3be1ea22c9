"""celseg.evaluation"""
