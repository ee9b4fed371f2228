"""Many intakes in one transaction with set-based statements: the leads their emails, phones and
visitor ids belong to are loaded at once (lookup), each intake is applied in order to that book of
leads as `record_intake` would apply it (book), and what they write (rows) is written with one
statement per table (writer).

CSV imports (`import_batch`) and grouped form posts (`form_batch`) both write through here.
"""
