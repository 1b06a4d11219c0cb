"""The hubbub extension, made before any app exists so that tasks can be declared anywhere."""

from hubbub.flask import Hubbub

hubbub = Hubbub()
