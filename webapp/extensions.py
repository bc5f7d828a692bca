"""Extensions created unbound; the app factory binds them."""

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from webapp.models.base import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
