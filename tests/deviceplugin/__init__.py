"""Tests of fpgaserve.deviceplugin (a package so that test modules can import the fake kubelet)."""
