"""The LoadGen harness: QSL, SUTs per scenario, settings, logs. It drives any `engines.base.Engine`."""
