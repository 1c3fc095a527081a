"""Tests of fpgaserve.server (a package so that test modules can import ``helpers``)."""
