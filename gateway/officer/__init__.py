"""The officer's side of the box: the shift (who records with it, RULES R5) and the report book
(which recordings still need a report, R4). Pure cores in `shift.py` and `reports.py`, their
shells (a small file each in the state directory, the audit log, the evidence store) in
`shift_service.py` and `reports_service.py`."""
