"""Shared modelling code: timm backbones (creation, weights, exports) and the supervised classifier."""
