"""Tests of fpgaserve.inference (a package so that test modules can import ``helpers``)."""
