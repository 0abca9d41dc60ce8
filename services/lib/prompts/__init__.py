"""Prompt shapes that more than one service must build identically (recall framing)."""
