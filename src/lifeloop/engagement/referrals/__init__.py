"""Referrals: invite codes, attribution, rewards for both sides, fraud guards."""
