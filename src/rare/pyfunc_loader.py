"""The model file of the registered pyfunc (MLflow's "models from code"): MLflow copies this file into
each logged model and runs it to load one, so a model never holds a pickled object. See ``rare.registry``."""

import mlflow

from rare.registry import RetrieverModel

mlflow.models.set_model(RetrieverModel())
