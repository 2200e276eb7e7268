"""What every layer may use: errors, the thread policy, decoding, log-mel and device input."""
