"""Answering with a model: engines, prediction, explanations, exports and warm web workers."""
