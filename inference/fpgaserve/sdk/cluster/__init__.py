"""The cluster half of the SDK: Workspace, Model and Webservice backed by the fpgaserve CRDs.

Role: what ``fpgaserve.sdk.core`` (the twin of ``azureml.core``) and ``fpgaserve model|service``
use. Nothing here imports TensorFlow or numpy.
"""
